"""The router as an xDS control plane: proxyless gRPC clients take their routes from it."""
