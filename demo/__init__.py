"""The demo `make up` runs: a `dg` project in the repository root whose one model is a
`ml_platform.ModelComponent` (demo/defs/churn/defs.yaml) with its own feature transform."""
