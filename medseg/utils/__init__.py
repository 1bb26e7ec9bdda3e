"""Small shared helpers with no dependency above the standard library, numpy and torch."""
