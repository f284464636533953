"""The built-in demo model's world: synthetic clips with known motion, its AR-DF training
objective, its shipped files, and the motion estimate that grades it. Nothing here is needed to
serve a real Lumos-1 checkpoint."""
