"""The Routing Monitor as a web page (`orxaq-grpc web`): a companion process that follows the service
once and serves every open page from that (app.py, feed.py), with the operator actions (controls.py)."""
