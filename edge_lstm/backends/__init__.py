"""Step engines behind one interface: `y, state_out = step(x, state)`."""
