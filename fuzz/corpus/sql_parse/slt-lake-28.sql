DROP TABLE volumes
