"""The top layer: everything that sits above the apps and may import all of them."""
