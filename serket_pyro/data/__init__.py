"""Data files shipped inside the package (the embedded MNIST subset)."""
