"""The recommender networks and their objectives: LightGCN / GCN over the graph and the text
fusions (`network`), the ranking losses (`losses`), and building a model for a dataset from a
config (`setup`)."""
