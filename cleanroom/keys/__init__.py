"""Key material: the consortium secret, organization identities, consortium and ceremony."""
