"""What was collected, as aggregate figures and charts: `lucie-bot report` and `!lucie stats`."""
