"""What happened after routing: the ledger's records, economics, detection, breakers, budgets.

Plain Python like the routing core: no grpc, no protobuf.
"""
