"""Building blocks shared by methods: encoders, temporal models, fusion."""
