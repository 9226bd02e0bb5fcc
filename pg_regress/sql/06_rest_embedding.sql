-- Embedding through foreign keys: many-to-one, one-to-many, one-to-one,
-- many-to-many, hints, !inner, spread, filters/order/limit on embeds.
begin;
create table public.authors (id int primary key, name text not null);
create table public.books (
  id int primary key,
  title text not null,
  author_id int references public.authors(id),
  editor_id int references public.authors(id),
  meta jsonb
);
create table public.bios (id int primary key, author_id int unique references public.authors(id), text text);
create table public.genres (id int primary key, name text not null);
create table public.book_genres (book_id int references public.books(id), genre_id int references public.genres(id), primary key (book_id, genre_id));
grant select on all tables in schema public to anon;
insert into public.authors values (1, 'Le Guin'), (2, 'Lem'), (3, 'Nobody');
insert into public.books values
  (1, 'The Dispossessed', 1, 2, '{"pages": 387, "tags": ["anarchy"]}'),
  (2, 'Solaris', 2, 1, '{"pages": 204}'),
  (3, 'The Lathe of Heaven', 1, null, null);
insert into public.bios values (1, 1, 'Ursula K. Le Guin');
insert into public.genres values (1, 'sf'), (2, 'philosophy');
insert into public.book_genres values (1, 1), (1, 2), (2, 1);

create function rest(query text, headers text default '{}') returns table(status int, body text)
language sql as $$
  select status, body from fluxbase.rest(json_build_object('method', 'GET', 'path', split_part(query, '?', 1),
    'query', split_part(query, '?', 2), 'headers', headers::json), '{"role": "anon"}')
$$;

-- many-to-one needs a hint here: two foreign keys point at authors
select * from rest('books?select=title,authors(name)&id=eq.1');
select * from rest('books?select=title,author:authors!author_id(name),editor:authors!books_editor_id_fkey(name)&order=id');
-- one-to-many, with order and limit inside the embed
select * from rest('authors?select=name,books!author_id(title)&books.order=id.desc&books.limit=1&order=id');
-- one-to-one (the referencing column is unique): an object, not an array
select * from rest('authors?select=name,bios(text)&order=id');
-- many-to-many through the junction table
select * from rest('books?select=title,genres(name)&genres.order=name&order=id');
-- !inner drops parents without a match; filters on the embed
select * from rest('authors?select=name,books!author_id!inner(title)&books.title=like.*Heaven*');
-- spread a to-one embed into the parent
select * from rest('books?select=title,...authors!author_id(author:name)&order=id&limit=2');
-- JSON paths in select, filters and order
select * from rest('books?select=id,pages:meta->pages,first_tag:meta->tags->>0&meta->>pages=gt.300');
-- or/and trees, not, any/all
select * from rest('books?select=id&or=(id.eq.1,and(title.ilike.*sol*,author_id.eq.2))&order=id');
select * from rest('books?select=id&not.or=(id.eq.1,id.eq.2)');
select * from rest('books?select=id&title=like(any).{*Sol*,*Lathe*}&order=id');
select * from rest('books?select=id&editor_id=isdistinct.1&order=id');
-- errors
select * from rest('books?select=title,nothing(*)');
select * from rest('books?select=title,authors(*)');
select * from rest('books?select=title&authors.name=eq.x');
select * from rest('books?select=id&or=(id.eq.1');
rollback;
