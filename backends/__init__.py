"""One adapter module per framework; see suite.backend_api for the shape each one has."""
