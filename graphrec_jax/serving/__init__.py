"""Serving: every node's representation for inference (`propagation`), top-K ranking
(`ranking`), metrics and evaluation (`metrics`, `beyond_accuracy`, `evaluation`), re-ranking
for diversity (`diversity`), and the `Recommender` (`recommender`). Nothing here imports
training.
"""
