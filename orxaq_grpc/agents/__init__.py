"""What coding agents print, read without transport: their token usage and cost."""
