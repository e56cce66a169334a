"""The graph: the user-item `jraph.GraphsTuple` and its padding (`build`), host-side sparse
operators (`sparse`), propagation layers (`layers`), and sampled neighbourhood subgraphs
(`subgraphs`)."""
