SELECT nope FROM ticks
