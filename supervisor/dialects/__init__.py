"""Pure translation per API surface: parse requests and shape replies and errors."""
