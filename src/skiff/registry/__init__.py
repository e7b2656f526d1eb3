"""The OCI distribution client: transport, auth flow, and the registry API for one repository."""
