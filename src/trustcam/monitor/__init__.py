"""Camera health monitors: tamper detection (covered, defocused, moved, blinded, frozen, looped)."""
