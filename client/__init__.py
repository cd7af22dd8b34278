"""framestream's client: discover, decode, letterbox, infer, write."""
