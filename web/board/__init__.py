"""The coordinators' live board: today's weddings a staff user oversees (decision 0029)."""
