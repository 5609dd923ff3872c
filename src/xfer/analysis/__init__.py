"""Diagnostics: transferability scores at each cut depth, representation similarity (CKA), weight drift."""
