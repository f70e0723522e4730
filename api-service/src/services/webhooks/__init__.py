"""Completion webhooks: where they may go (targets), how they are signed (signing), one
attempt over HTTP (delivery) and the sender's loop (sender)."""
