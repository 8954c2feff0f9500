"""The `toonface` command line: the top layer, over flows, pipeline stages, models and manifests."""
