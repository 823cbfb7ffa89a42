select
    geolocation_zip_code_prefix as zip_code_prefix,
    geolocation_lat as lat,
    geolocation_lng as lng,
    md5(geolocation_city || '|' || geolocation_state) as city_id
from {{ source('raw', 'olist_geolocation') }}
