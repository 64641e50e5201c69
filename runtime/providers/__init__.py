"""Model providers: one small async protocol (`base.Provider`), the `openai` and `mock` providers, and the
`sleipnir.providers` entry-point group for third-party ones."""
