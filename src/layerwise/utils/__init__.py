"""Small helpers shared by several modules (seeding, hashing, atomic output, threads)."""
