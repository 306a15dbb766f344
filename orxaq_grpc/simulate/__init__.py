"""The fleet simulator: simulated lanes, hidden model truths and provider faults driving the real
service over gRPC on a simulated clock (`orxaq-grpc simulate`)."""
