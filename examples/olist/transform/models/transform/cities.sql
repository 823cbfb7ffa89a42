-- One row per (city, state), with a stable key.
select
    md5(city || '|' || state) as city_id,
    city,
    state
from (
    select customer_city as city, customer_state as state from {{ source('raw', 'olist_customers') }}
    union
    select seller_city, seller_state from {{ source('raw', 'olist_sellers') }}
    union
    select geolocation_city, geolocation_state from {{ source('raw', 'olist_geolocation') }}
) places
where city is not null and state is not null
