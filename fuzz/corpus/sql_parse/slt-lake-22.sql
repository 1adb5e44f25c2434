SELECT sum(qty) FROM fills
