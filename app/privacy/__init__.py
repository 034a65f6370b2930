"""Personal data (SPEC 8.3): erasure, access requests and retention."""
