"""smeme: Score-based Maximum Entropy Manifold Exploration (S-MEME)."""
__version__ = "0.1.0"
