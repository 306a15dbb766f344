"""`orxaq-grpc evaluate`: the success model as a strong-or-weak router on held-out per-prompt outcomes,
measured with RouteLLM's APGR and CPT against random routing and the oracle."""
