"""The ticket sinks (GitHub, Jira, webhook, file) and their shared HTTP client."""
