CREATE STREAM volumes (a INT)
