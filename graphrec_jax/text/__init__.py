"""The text tower: our Flax BERT (`bert`), Hugging Face checkpoint I/O (`pretrained`), the
`TextEncoder` (`encoder`), item-text assembly (`item_text`), the embedding cache (`cache`),
per-node text features (`features`), the fine-tuned tower (`finetune`) and masked-LM domain
pretraining (`pretraining`). Submodules load on first use."""
