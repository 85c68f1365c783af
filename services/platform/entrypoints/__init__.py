"""HTTP routes (pushes, admin) and the Kafka subscription with its callback loop."""
