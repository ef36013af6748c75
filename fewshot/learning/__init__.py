"""Learning from users: which texts to label next (`selection`) and which labels look wrong (`audit`).

Maths only: numpy arrays in, ranked indices out. No HTTP, no store, no torch (import contracts);
the gateway feeds them the served version's probabilities and embeddings.
"""
