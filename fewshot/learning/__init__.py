"""Learning from users: which texts to label next (`selection`), which labels look wrong (`audit`), and
why a version answered what it did (`explanations`: the spans that carried it, the examples nearest).

Maths only: numpy arrays in, ranked indices out. No HTTP, no store, no torch (import contracts);
the gateway feeds them the served version's probabilities and embeddings.
"""
