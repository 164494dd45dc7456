"""GDPR/CCPA deletion requests: SLA clock, identity expansion, erasure steps, suppression, evidence."""
