"""A random-weight stand-in for the default base model, Alibaba-NLP/gte-modernbert-base (ModernBERT), built
offline: Hub downloads fail where the tests and benchmarks run, and no test had run that architecture (issue 42).

    python -m bench.modernbert_standin TARGET_DIR [--layers N] [--seed S]

Beside bench/tiny_model.py (a 2-layer BERT for the server's own costs): this one has the default model's
shape, so what its architecture does to our code (export, quantization, the numpy path, long texts) and to
the machine (time, memory) shows. Tests take few layers (`layers`: code paths; 3 has both kinds of
attention); the benchmarks the published 22.

Published, and mirrored here (its config.json, model card and Hub file listing):
- ModernBERT (transformers' ModernBertModel): vocabulary 50368, hidden size 768, intermediate size 1152
  (GeGLU, "gelu"), 22 layers, 12 heads, global attention every 3rd layer (0, 3, 6, ...) and local attention
  in a 128-token window (64 either side) elsewhere, RoPE theta 160000 global / 10000 local, 8192
  positions, no biases, norm eps 1e-5; [CLS] 50281 (= bos), [SEP] 50282 (= eos), [PAD] 50283. `PUBLISHED`
  passes every one of them, so transformers' defaults changing would not change the stand-in.
- sentence-transformers: two modules, Transformer then Pooling, and no Normalize (the listing's
  modules.json is 229 bytes: exactly those two as sentence-transformers writes them; with Normalize it
  would be 349), CLS pooling (the card: `last_hidden_state[:, 0]`, normalising "optionally"), 768
  dimensions, 8192 tokens of input; no sentence_bert_config.json in the listing, so sentence-transformers
  takes max_seq_length from the tokenizer's model_max_length (8192): the same here.
- The tokenizer's interface: [CLS] text [SEP], inputs input_ids and attention_mask only (ModernBERT takes
  no token type ids), model_max_length 8192 (the card tokenizes with max_length=8192).

Assumed (not verifiable offline):
- [UNK] 50280 and [MASK] 50284 (ModernBERT-base's tokenizer, from memory), right padding (transformers'
  default);
- the tokens themselves: the real tokenizer is ModernBERT's (OLMo's) byte-level BPE of ~50k tokens; here a
  byte-level BPE of at most `BPE_VOCABULARY` tokens trained on this repository's
  banking texts (bench/data/banking77_test_texts.json), its ids below 4,000 and the special tokens at the
  real ids (measured: 4.3 characters per token on those banking texts, 1.8 on this repository's README and
  settings code). Text unlike the banking texts becomes more, shorter tokens than with the real tokenizer, so
  it reaches the 8192-token window with fewer characters: fine for window and policy tests, not for
  estimating the real model's tokens per character.
- 1_Pooling/config.json's keys besides CLS (other modes off, include_prompt true) and
  config_sentence_transformers.json (cosine similarity, no prompts), as sentence-transformers writes them.

Not mirrored: the weights' precision. The published pytorch_model.bin is 298 MB for 149 M parameters, so
half precision on disk (float16 or bfloat16: its config's dtype not seen here); this one is float32.
transformers 5 loads a checkpoint in its own dtype unless told otherwise (checked: a bfloat16 copy of this
stand-in loads as bfloat16 through SetFit and sentence-transformers on CPU), so the real model may train and
serve in half precision where the stand-in does not.

Not the real model: the weights are random (torch.manual_seed(seed): the same files each time), so its
labels are noise and its embeddings carry no meaning. It proves code paths, numerics and costs, not quality.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BPE_VOCABULARY = 4000
TEXTS = Path(__file__).resolve().parent / "data" / "banking77_test_texts.json"
MAX_TOKENS = 8192
SPECIAL_TOKENS = {"[UNK]": 50280, "[CLS]": 50281, "[SEP]": 50282, "[PAD]": 50283, "[MASK]": 50284}
"""gte-modernbert-base's (ModernBERT-base's) special tokens and their ids."""
PUBLISHED = {
    "vocab_size": 50368, "hidden_size": 768, "intermediate_size": 1152, "num_attention_heads": 12,
    "hidden_activation": "gelu", "max_position_embeddings": MAX_TOKENS, "global_attn_every_n_layers": 3,
    "local_attention": 128, "global_rope_theta": 160000.0, "local_rope_theta": 10000.0, "norm_eps": 1e-5,
    "norm_bias": False, "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02,
    "initializer_cutoff_factor": 2.0, "pad_token_id": 50283, "bos_token_id": 50281, "eos_token_id": 50282,
    "cls_token_id": 50281, "sep_token_id": 50282,
}
"""gte-modernbert-base's config.json, as ModernBertConfig takes it (num_hidden_layers apart: 22 published)."""
PUBLISHED_LAYERS = 22
POOLING = {"word_embedding_dimension": 768, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
           "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
           "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False, "include_prompt": True}
MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]


def make_modernbert_standin(target: Path, layers: int = PUBLISHED_LAYERS, seed: int = 0) -> Path:
    """Write the stand-in (module docstring) into `target`, `layers` deep; the same files for the same
    arguments."""
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    target.mkdir(parents=True, exist_ok=True)
    make_tokenizer().save_pretrained(target)
    config = ModernBertConfig(**PUBLISHED, num_hidden_layers=layers)
    torch.manual_seed(seed)
    ModernBertModel(config).eval().save_pretrained(target)
    write_json(target / "modules.json", MODULES)
    write_json(target / "1_Pooling" / "config.json", POOLING)
    write_json(target / "config_sentence_transformers.json",
               {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    return target


def make_tokenizer():
    """A byte-level BPE trained on the repository's banking texts, ModernBERT's special tokens at their ids,
    as a transformers fast tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(json.loads(TEXTS.read_text(encoding="utf8")), trainers.BpeTrainer(
        vocab_size=BPE_VOCABULARY, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    spec = json.loads(bpe.to_str())
    spec["model"]["vocab"].update(SPECIAL_TOKENS)  # the real ids, far above the trained ones: gaps are fine
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False, lstrip=token == "[MASK]")
                                  for token in SPECIAL_TOKENS])  # they keep their vocabulary ids
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", SPECIAL_TOKENS["[CLS]"]), ("[SEP]", SPECIAL_TOKENS["[SEP]"])])
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
                                   model_max_length=MAX_TOKENS, padding_side="right",
                                   model_input_names=["input_ids", "attention_mask"])


def write_json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2), encoding="utf8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path)
    parser.add_argument("--layers", type=int, default=PUBLISHED_LAYERS)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    target = make_modernbert_standin(arguments.target, arguments.layers, arguments.seed)
    print(f"random-weight gte-modernbert-base stand-in ({arguments.layers} layers, seed {arguments.seed}) "
          f"written to {target}")


if __name__ == "__main__":
    main()
