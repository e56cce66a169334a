"""graphrec-jax: graph collaborative filtering and BERT text in one JAX/Flax recommender."""
