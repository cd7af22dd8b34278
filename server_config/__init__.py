"""Server side of framestream: model building, Triton configuration, the local CPU server."""
