"""The workspace configuration as the runtime's own durable, versioned store (placeholder; see below)."""
