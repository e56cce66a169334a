"""The text tower: our Flax BERT, Hugging Face checkpoint I/O, the `TextEncoder`, item-text
assembly, the embedding cache and masked-LM domain pretraining."""

from graphrec_jax.text.bert import (
    POOLINGS,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    BertOutput,
    compute_dtype,
    pool,
)
from graphrec_jax.text.cache import default_cache_dir, encode_with_cache
from graphrec_jax.text.encoder import TextEncoder, embed, pad_token_lists, plan_batches
from graphrec_jax.text.item_text import (
    amazon_item_texts,
    join_text_fields,
    parse_fields,
    read_amazon_item_records,
    read_texts_file,
)
from graphrec_jax.text.pretrained import (
    create_random_checkpoint,
    load_pretrained,
    resolve_model_directory,
    save_pretrained,
)
from graphrec_jax.text.pretraining import pretrain_mlm

__all__ = [
    "POOLINGS",
    "BertConfig",
    "BertForMaskedLM",
    "BertModel",
    "BertOutput",
    "TextEncoder",
    "amazon_item_texts",
    "compute_dtype",
    "create_random_checkpoint",
    "default_cache_dir",
    "embed",
    "encode_with_cache",
    "join_text_fields",
    "load_pretrained",
    "pad_token_lists",
    "parse_fields",
    "plan_batches",
    "pool",
    "pretrain_mlm",
    "read_amazon_item_records",
    "read_texts_file",
    "resolve_model_directory",
    "save_pretrained",
]
