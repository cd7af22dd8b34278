"""Model building and wrapping: everything that writes a contract-conforming ONNX file."""
