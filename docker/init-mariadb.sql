-- Demo databases (the same ones scripts/setup.sh creates locally).
CREATE DATABASE IF NOT EXISTS shop;
CREATE DATABASE IF NOT EXISTS shop_next;
CREATE TABLE IF NOT EXISTS shop.orders (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  customer VARCHAR(100) NOT NULL,
  total DECIMAL(12,2) NOT NULL DEFAULT 0,
  created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
CREATE TABLE IF NOT EXISTS shop.order_items (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  order_id BIGINT NOT NULL,
  sku VARCHAR(40) NOT NULL,
  qty INT NOT NULL
);
CREATE TABLE IF NOT EXISTS shop.audit_log (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  message TEXT
);
-- Root connects from the Tandem container.
CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
