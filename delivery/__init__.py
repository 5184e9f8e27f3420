"""Delivery rules without FCM or Kafka: what a push looks like, when to retry, how fast to send."""
