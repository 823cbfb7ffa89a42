-- One row per (city, state) that a customer or seller names, with a stable key.
-- (Geolocation points spell cities with and without accents; they are not
-- referenced by any row, so they do not make cities of their own.)
select
    md5(city || '|' || state) as city_id,
    city,
    state
from (
    select customer_city as city, customer_state as state from {{ source('raw', 'olist_customers') }}
    union
    select seller_city, seller_state from {{ source('raw', 'olist_sellers') }}
) places
where city is not null and state is not null
