"""Small shared helpers with no dependency above numpy, scipy, edt and torch (bottom layer)."""
