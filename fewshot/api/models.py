"""Models: list them, read a version, download it as a SetFit directory, delete one version or all."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, JSONResponse, Response

from fewshot import store
from fewshot.api import errors
from fewshot.api.errors import documented
from fewshot.api.gateway import ExampleStoreDep, InferenceDep, PredictionLogDep
from fewshot.api.model_schemas import ModelList, ModelsDeleted, ModelView
from fewshot.api.schemas import is_valid_model_reference
from fewshot.api.views import model_versions, model_view
from fewshot.model_archive import ARCHIVE_MEDIA_TYPE, archive_name, write_archive_file

logger = logging.getLogger("fewshot.gateway")
router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
def list_models() -> ModelList:
    return ModelList(models=[model_versions(name, listed) for name, listed in store.all_models().items()])


@router.get("/v1/models/{model_name}", response_model=ModelView, responses=documented(400, 404))
def get_model(model_name: str) -> ModelView | JSONResponse:
    """The latest version of a model, or the version `name:version` names."""
    if not is_valid_model_reference(model_name):
        return errors.invalid_model_reference()
    stored = store.resolve(model_name)
    return model_view(stored) if stored else errors.unknown_model(model_name)


@router.get("/v1/models/{model_name}/download", response_class=FileResponse, responses={
    200: {"content": {ARCHIVE_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
          "description": "The version's SetFit directory with its model card, as name-version.tar.gz."},
    **documented(400, 404)})
async def download_model(model_name: str) -> Response:
    """The latest version of a model, or `name:version`, as a .tar.gz that SetFitModel.from_pretrained loads."""
    if not is_valid_model_reference(model_name):
        return errors.invalid_model_reference()
    stored = await asyncio.to_thread(store.resolve, model_name)
    if stored is None:
        return errors.unknown_model(model_name)
    try:
        archive = await asyncio.to_thread(write_archive_file, stored)
    except FileNotFoundError:  # deleted while it was being read
        return errors.unknown_model(model_name)
    return FileResponse(archive, media_type=ARCHIVE_MEDIA_TYPE, filename=archive_name(stored),
                        background=BackgroundTask(archive.unlink, missing_ok=True))


@router.delete("/v1/models/{model_name}", response_model=ModelsDeleted, responses=documented(400, 404))
async def delete_model(model_name: str, client: InferenceDep, sets: ExampleStoreDep,
                       logged: PredictionLogDep) -> ModelsDeleted | JSONResponse:
    """Every version of a model and its example set, or one version (`name:version`); deleting the
    latest version serves the previous."""
    if not is_valid_model_reference(model_name):
        return errors.invalid_model_reference()
    deleted = await asyncio.to_thread(store.delete, model_name)
    name, version = store.split_reference(model_name)
    examples_deleted = await asyncio.to_thread(sets.drop, name) if version is None else 0
    if version is None:
        await asyncio.to_thread(logged.drop, name)
    if not deleted:
        if examples_deleted:
            return ModelsDeleted(deleted=[], examples_deleted=examples_deleted)
        return errors.unknown_model(model_name)
    try:  # at once on this host; elsewhere within MODEL_REFRESH_SECONDS
        await client.refresh([name])
    except Exception:
        logger.warning("deleted %s, but the inference service could not drop it now; it will within "
                       "MODEL_REFRESH_SECONDS", ", ".join(deleted), exc_info=True)
    return ModelsDeleted(deleted=deleted, examples_deleted=examples_deleted)
