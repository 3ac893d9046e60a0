"""Consented feedback forwarded to a team's webhook: signed JSON with pseudonyms only
(bot.webhook.payload), kept in the database until delivered (bot.webhook.delivery)."""
