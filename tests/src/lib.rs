//! Helpers for kaskade end-to-end tests: processes, namespaces, ports.
