"""OpenAI's embeddings response shape, for clients built on OpenAI's API (`base_url=".../v1"`).

The vectors arrive from the inference service as float32 bytes (fewshot.serving.items); here they
are cut to `dimensions` and re-normalised (as OpenAI's and TEI's `dimensions` do: Matryoshka-style
truncation), and written as numbers or as base64 of little-endian float32, which is what the
`openai` client asks for by default when numpy is installed and decodes with
`np.frombuffer(base64.b64decode(s), dtype="float32")`.
"""

from __future__ import annotations

import base64

import numpy as np
from starlette.responses import JSONResponse, Response

from fewshot.api.errors import invalid
from fewshot.api.inference_schemas import EmbeddingsRequest, OpenAIEmbedding, OpenAIEmbeddingsResponse, OpenAIUsage
from fewshot.serving.items import ItemEmbedding

LITTLE_ENDIAN_FLOAT32 = np.dtype("<f4")


def _vector(item: ItemEmbedding, dimensions: int | None) -> np.ndarray:
    values = np.frombuffer(item.vector, dtype=np.float32)  # machine order, as the inference service wrote it
    if dimensions is not None:
        values = values[:dimensions]
        norm = float(np.linalg.norm(values))
        if norm > 0:
            values = values / norm
    return values.astype(LITTLE_ENDIAN_FLOAT32, copy=False)


def openai_response(request: EmbeddingsRequest, results: list[ItemEmbedding]) -> Response:
    """OpenAI's `{object: list, data: [...], model, usage}`, or a 400 for `dimensions` beyond the model's size."""
    size = len(results[0].vector) // 4 if results else 0
    if request.dimensions is not None and request.dimensions > size:
        return invalid(f"dimensions: must be at most {size}, the embedding size of model {request.reference!r}; "
                       f"got {request.dimensions}")
    as_base64 = request.encoding_format == "base64"
    data = []
    for index, item in enumerate(results):
        values = _vector(item, request.dimensions)
        embedding = base64.b64encode(values.tobytes()).decode("ascii") if as_base64 else values.tolist()
        data.append(OpenAIEmbedding(index=index, embedding=embedding))
    tokens = sum(item.tokens for item in results)
    body = OpenAIEmbeddingsResponse(data=data, model=request.reference,
                                    usage=OpenAIUsage(prompt_tokens=tokens, total_tokens=tokens))
    return Response(body.model_dump_json().encode(), media_type=JSONResponse.media_type)
