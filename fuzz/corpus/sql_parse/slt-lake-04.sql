INSERT INTO volumes VALUES ('CCC', 5, 30.5), ('DDD', 1, NULL)
